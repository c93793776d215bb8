-- The original design's tables, with what the chat channel needs on top:
-- the client's message id (idempotent resend), the reply's link to its
-- message, how it finished, its sources and its token boundaries (resume
-- replays the very same tokens).
CREATE TABLE users (
    id              bigserial PRIMARY KEY,
    email           text NOT NULL,
    hashed_password text NOT NULL,
    is_active       boolean NOT NULL DEFAULT true,
    is_verified     boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE chat_history (
    id              bigserial PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message         text NOT NULL,
    is_user_message boolean NOT NULL,
    "timestamp"     timestamptz NOT NULL DEFAULT now(),
    client_id       text,
    reply_to        bigint REFERENCES chat_history (id) ON DELETE CASCADE,
    finish_reason   text,
    sources         jsonb,
    token_lengths   integer[]
);
-- One row per (user, client id): resends find the stored message.
CREATE UNIQUE INDEX chat_history_client_id_key
    ON chat_history (user_id, client_id) WHERE client_id IS NOT NULL;
-- One reply per message.
CREATE UNIQUE INDEX chat_history_reply_to_key
    ON chat_history (reply_to) WHERE reply_to IS NOT NULL;
-- A user's newest history, paged by id.
CREATE INDEX chat_history_user_newest ON chat_history (user_id, id DESC);
-- CHAT_RATE_PER_MINUTE counts a user's messages of the last minute.
CREATE INDEX chat_history_user_recent ON chat_history (user_id, "timestamp")
    WHERE is_user_message;
-- The purge walks rows by age.
CREATE INDEX chat_history_timestamp ON chat_history ("timestamp");

-- Signed verification links are stateless; this row makes each one single-use
-- and lets the purge drop expired ones.
CREATE TABLE email_verifications (
    jti         text PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX email_verifications_expires ON email_verifications (expires_at);

-- Rate limits shared by every instance: one row per (bucket key, window).
CREATE TABLE rate_limits (
    key         text NOT NULL,
    window_start timestamptz NOT NULL,
    hits        integer NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_limits_window ON rate_limits (window_start);
