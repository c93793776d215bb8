-- What admins did: which conversation they read, which document they changed, which
-- purge they ran. The email is kept as it was, so the log outlives the account.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    admin_id    bigint,
    admin_email text NOT NULL,
    action      text NOT NULL,
    target      text
);
CREATE INDEX audit_log_at ON audit_log (at);
-- The operators' figures of the last hours: replies by age.
CREATE INDEX chat_history_replies_recent ON chat_history ("timestamp") WHERE NOT is_user_message;
