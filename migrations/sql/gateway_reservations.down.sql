DROP FUNCTION IF EXISTS tw_lock_key(text, text);
