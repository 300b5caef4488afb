-- The least-privilege database user of the MES collector: it needs no more than this.
-- Applied once by a database administrator, after database.sql:
--   mariadb -uroot < grants.sql
-- Replace the password (and give the same one to the collector in
-- /etc/mes-collector/secrets.env as MES_DB_PASSWORD), and add grants for any table
-- a plugin of your own writes. To use another database name, replace
-- `cnc_database` below as in database.sql.
CREATE USER IF NOT EXISTS 'mes_collector'@'%' IDENTIFIED BY 'change-me';
GRANT SELECT, INSERT         ON cnc_database.cnc_data           TO 'mes_collector'@'%';
GRANT SELECT, INSERT         ON cnc_database.cnc_alarms         TO 'mes_collector'@'%';
GRANT SELECT, INSERT         ON cnc_database.dead_letters       TO 'mes_collector'@'%';
GRANT SELECT, INSERT, UPDATE ON cnc_database.cnc_status         TO 'mes_collector'@'%';
GRANT SELECT, INSERT, UPDATE ON cnc_database.collector_position TO 'mes_collector'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON cnc_database.collector_lease TO 'mes_collector'@'%';
-- Only for `mes-collector dead-letters replay` with this user (docs/dead-letters.md):
-- it takes replayed dead letters out. Leave it out if operators replay with a user
-- of their own.
-- GRANT DELETE ON cnc_database.dead_letters       TO 'mes_collector'@'%';
