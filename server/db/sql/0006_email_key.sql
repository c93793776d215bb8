-- One normal form of each address (server/auth/emails.py), stored and compared as
-- is: lower(email) alone let PostgreSQL's lowercasing (`İ` → `i`) disagree with
-- Python's, so an account could be squatted or a lockout bypassed. `email` stays
-- what the user typed; `email_key` is what uniqueness and lookup use.
--
-- For an all-ASCII address the key is lower(email) in both languages, so existing
-- rows and rows inserted by SQL alone (bench, tests) get it here and from the
-- trigger. Other rows are keyed at start-up in Python (migrations.backfill_email_keys);
-- one that has no key (a non-ASCII local part, now refused) can no longer log in.
ALTER TABLE users ADD COLUMN email_key text;
UPDATE users SET email_key = lower(email) WHERE email !~ E'[^\\x01-\\x7f]';
DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_email_key ON users (email_key);
CREATE INDEX users_email_unkeyed ON users (id) WHERE email_key IS NULL;

CREATE FUNCTION users_default_email_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.email_key IS NULL AND NEW.email !~ E'[^\\x01-\\x7f]' THEN
        NEW.email_key := lower(NEW.email);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER users_default_email_key BEFORE INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION users_default_email_key();
