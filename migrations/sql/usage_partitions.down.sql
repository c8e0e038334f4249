DROP FUNCTION IF EXISTS wallet_ensure_usage_partitions(date, integer);
