-- Brings a `cnc_database` made by the original Python service to the collector's layout
-- (that of database.sql): cnc_data's columns widened (BIGINT id and timestamp, the
-- latter past 2038; VARCHAR(64) cnc_id, VARCHAR(255) part_program, JSON json_data),
-- `stored_at` and the (cnc_id, timestamp) index added, utf8mb3 converted to utf8mb4.
-- Every row is kept with its values: widening converts each value exactly; utf8mb3
-- text is valid utf8mb4 as it is. For MariaDB (10.2.7 or later; tested on 10.11), not
-- MySQL. See docs/migrating-from-python.md.
--
-- Safe to run more than once: a table already in the current layout is not touched.
-- Stop the collector first (the conversion copies the table and blocks its writes
-- meanwhile), take a backup, then:
--   mariadb -uroot < /usr/share/mes-collector/migrations/001-from-python-service.sql
-- and apply database.sql (before or after: each keeps what the other made).
-- To use another database name, replace `cnc_database` in the line below.
USE cnc_database;

-- A value that does not fit the new layout stops the migration with an error and
-- changes nothing, rather than being silently changed (non-strict mode would turn a
-- NULL cnc_id into '').
SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION';

-- Tables created in this database from now on (a mapping's, say) default to utf8mb4.
ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

-- cnc_data: one ALTER, so that it changes all or nothing; run only while the table
-- differs from the current layout, so a second run costs no copy of the table.
SET @cnc_data_differs = (
    SELECT COUNT(*) FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cnc_data' AND NOT (
           (COLUMN_NAME = 'id'           AND COLUMN_TYPE = 'bigint(20) unsigned')
        OR (COLUMN_NAME = 'cnc_id'       AND COLUMN_TYPE = 'varchar(64)'  AND IS_NULLABLE = 'NO' AND CHARACTER_SET_NAME = 'utf8mb4')
        OR (COLUMN_NAME = 'part_program' AND COLUMN_TYPE = 'varchar(255)' AND IS_NULLABLE = 'NO' AND CHARACTER_SET_NAME = 'utf8mb4')
        OR (COLUMN_NAME = 'timestamp'    AND COLUMN_TYPE = 'bigint(20)'   AND IS_NULLABLE = 'NO')
        OR (COLUMN_NAME = 'json_data'    AND COLUMN_TYPE = 'longtext'     AND IS_NULLABLE = 'NO' AND CHARACTER_SET_NAME = 'utf8mb4')
        OR (COLUMN_NAME = 'stored_at')
    )
) + (
    SELECT COUNT(*) = 0 FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cnc_data' AND COLUMN_NAME = 'stored_at'
) + (
    SELECT COUNT(*) = 0 FROM information_schema.STATISTICS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cnc_data' AND INDEX_NAME = 'cnc_data_cnc_time'
) + (
    SELECT COUNT(*) FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cnc_data' AND TABLE_COLLATION NOT LIKE 'utf8mb4%'
);
-- `stored_at` of the rows already there is the time of this migration: when the old
-- service stored them is not known. JSON is MariaDB's LONGTEXT with a JSON_VALID check:
-- the text is kept byte for byte, and a row that is not JSON stops the migration.
SET @cnc_data_sql = IF(@cnc_data_differs > 0,
    'ALTER TABLE cnc_data
        CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
        MODIFY id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
        MODIFY cnc_id       VARCHAR(64)  NOT NULL,
        MODIFY part_program VARCHAR(255) NOT NULL,
        MODIFY timestamp    BIGINT       NOT NULL,
        MODIFY json_data    JSON         NOT NULL,
        ADD COLUMN IF NOT EXISTS stored_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
        ADD KEY IF NOT EXISTS cnc_data_cnc_time (cnc_id, timestamp)',
    'SELECT ''cnc_data already has the current layout; left as it is'' AS `001-from-python-service`');
PREPARE migrate FROM @cnc_data_sql;
EXECUTE migrate;
DEALLOCATE PREPARE migrate;

-- The collector's other tables, if database.sql created them while the database
-- still defaulted to utf8mb3 (database.sql now names utf8mb4 itself). Each is
-- converted only while it is not utf8mb4 yet.

SET @convert_sql = (SELECT IF(COUNT(*) > 0,
    'ALTER TABLE cnc_status CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci', 'SELECT NULL LIMIT 0')
    FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cnc_status' AND TABLE_COLLATION NOT LIKE 'utf8mb4%');
PREPARE migrate FROM @convert_sql;
EXECUTE migrate;
DEALLOCATE PREPARE migrate;

SET @convert_sql = (SELECT IF(COUNT(*) > 0,
    'ALTER TABLE cnc_alarms CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci', 'SELECT NULL LIMIT 0')
    FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cnc_alarms' AND TABLE_COLLATION NOT LIKE 'utf8mb4%');
PREPARE migrate FROM @convert_sql;
EXECUTE migrate;
DEALLOCATE PREPARE migrate;

SET @convert_sql = (SELECT IF(COUNT(*) > 0,
    'ALTER TABLE dead_letters CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci', 'SELECT NULL LIMIT 0')
    FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'dead_letters' AND TABLE_COLLATION NOT LIKE 'utf8mb4%');
PREPARE migrate FROM @convert_sql;
EXECUTE migrate;
DEALLOCATE PREPARE migrate;

SET @convert_sql = (SELECT IF(COUNT(*) > 0,
    'ALTER TABLE collector_position CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci', 'SELECT NULL LIMIT 0')
    FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'collector_position' AND TABLE_COLLATION NOT LIKE 'utf8mb4%');
PREPARE migrate FROM @convert_sql;
EXECUTE migrate;
DEALLOCATE PREPARE migrate;

SET @convert_sql = (SELECT IF(COUNT(*) > 0,
    'ALTER TABLE collector_lease CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci', 'SELECT NULL LIMIT 0')
    FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'collector_lease' AND TABLE_COLLATION NOT LIKE 'utf8mb4%');
PREPARE migrate FROM @convert_sql;
EXECUTE migrate;
DEALLOCATE PREPARE migrate;
