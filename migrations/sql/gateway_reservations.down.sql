DROP FUNCTION IF EXISTS tw_lock_key(text, text);
DROP FUNCTION IF EXISTS tw_texts(jsonb);
