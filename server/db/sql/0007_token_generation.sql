-- Revoking what an account had: every access token carries the account's
-- token_generation (`gen`), and one whose generation is not the account's current
-- one is refused. Opening the verification link, or choosing a password, moves
-- the generation on, so tokens issued before stop working everywhere at once.
--
-- hashed_password may be NULL: an account whose mailbox owner opened the link
-- without choosing a password has none (the one it had was not theirs to know),
-- and no password logs in to it until one is chosen.
ALTER TABLE users ADD COLUMN token_generation integer NOT NULL DEFAULT 0;
ALTER TABLE users ALTER COLUMN hashed_password DROP NOT NULL;
