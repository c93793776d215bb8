-- Guests (a visitor who chats before signing up) and visitors the host site already
-- knows (POST /api/v1/auth/identify): users without a password.
--
-- A guest has no email (null) and is_guest true; signing up with its token fills in
-- the email and password of the same row. An identified user has the host site's
-- `sub` in identity_sub (one user per sub) and, as its email_key, 'identity:' and
-- that sub: never an address, so an `email` claim can neither join nor block a
-- password account, nor log in by email.
ALTER TABLE users ALTER COLUMN email DROP NOT NULL;
ALTER TABLE users ADD COLUMN is_guest boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN identity_sub text;
CREATE UNIQUE INDEX users_identity_sub ON users (identity_sub) WHERE identity_sub IS NOT NULL;
-- The purge finds old guests.
CREATE INDEX users_guests ON users (created_at) WHERE is_guest;
