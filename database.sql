-- Schema of the MES collector. Safe to run more than once:
--   mariadb -uroot < database.sql
-- To use another database name, replace `cnc_database` in the two lines below.
CREATE DATABASE IF NOT EXISTS cnc_database CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE cnc_database;

-- What the MES pages read; name and columns kept from the original service.
-- `timestamp` is the machine's Unix epoch seconds, as sent; `stored_at` is when the
-- collector committed the row (for end-to-end latency). A cnc_data made by the original
-- Python service is left as it is here: `mes-collector check` says what differs, and
-- migrations/001-from-python-service.sql converts it.
CREATE TABLE IF NOT EXISTS cnc_data (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    cnc_id       VARCHAR(64)  NOT NULL,
    part_program VARCHAR(255) NOT NULL,
    timestamp    BIGINT       NOT NULL,
    json_data    JSON         NOT NULL,
    stored_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    KEY cnc_data_cnc_time (cnc_id, timestamp)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per machine: its last reported state, and when it was last heard from.
CREATE TABLE IF NOT EXISTS cnc_status (
    cnc_id       VARCHAR(64)  NOT NULL PRIMARY KEY,
    status       VARCHAR(64)  NULL,
    spin         DOUBLE       NULL,
    feed_rate    DOUBLE       NULL,
    part_count   BIGINT       NULL,
    part_program VARCHAR(255) NOT NULL,
    timestamp    BIGINT       NOT NULL,
    last_seen_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Alarms reported by controllers (CNCTypeB), one row per alarm per message.
CREATE TABLE IF NOT EXISTS cnc_alarms (
    id        BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    cnc_id    VARCHAR(64)  NOT NULL,
    timestamp BIGINT       NOT NULL,
    code      VARCHAR(64)  NOT NULL,
    message   TEXT         NOT NULL,
    stored_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    KEY cnc_alarms_cnc_time (cnc_id, timestamp)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Every message the collector could not store, with the reason. `payload` holds the
-- raw message, cut at `dead_letter_payload_limit` bytes (default 65536);
-- `payload_bytes` is its full size. `mes-collector dead-letters replay` deletes the
-- rows it stores; one that fails again keeps its id and `received_at`, takes the new
-- reason, and counts `replays`.
CREATE TABLE IF NOT EXISTS dead_letters (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    received_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    topic          VARCHAR(255) NOT NULL,
    cnc_id         VARCHAR(64)  NULL,
    plugin_class   VARCHAR(128) NULL,
    plugin_version VARCHAR(64)  NULL,
    reason         VARCHAR(32)  NOT NULL,
    detail         TEXT         NOT NULL,
    payload        MEDIUMBLOB   NOT NULL,
    payload_bytes  INT UNSIGNED NOT NULL,
    replays          INT UNSIGNED NOT NULL DEFAULT 0,
    last_replayed_at DATETIME(3)  NULL,
    KEY dead_letters_reason (reason),
    KEY dead_letters_cnc (cnc_id),
    KEY dead_letters_received (received_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Added after the first release: brought to tables created before it.
ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS replays          INT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_replayed_at DATETIME(3)  NULL,
    ADD KEY IF NOT EXISTS dead_letters_received (received_at);

-- How far each collector has got in its spool: committed in the same transaction as
-- the rows, so after a crash the collector resumes exactly after the last commit.
CREATE TABLE IF NOT EXISTS collector_position (
    client_id  VARCHAR(191)    NOT NULL PRIMARY KEY,
    last_seq   BIGINT UNSIGNED NOT NULL,
    updated_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Which collector holds each client_id: one live collector per client_id (its broker
-- session and its row in collector_position). Renewed with every commit; a holder
-- that stops renewing loses it after `client_lease_secs`.
CREATE TABLE IF NOT EXISTS collector_lease (
    client_id  VARCHAR(191)    NOT NULL PRIMARY KEY,
    holder     VARCHAR(255)    NOT NULL,
    expires_at DATETIME(3)     NOT NULL,
    renewals   BIGINT UNSIGNED NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
