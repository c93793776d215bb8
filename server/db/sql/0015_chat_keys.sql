-- The two guarantees of chat_history that outlive its partitioning (server/db/partitions.py):
-- one message per (user, client id), and one reply per message. PostgreSQL enforces a
-- unique index on a partitioned table only when it holds the partition key ("timestamp"),
-- so they move to this narrow unpartitioned table, one row per user message:
--
-- * the group commit inserts a message's key first (ON CONFLICT DO NOTHING on
--   (user_id, client_id)), and inserts the message row only for the keys it inserted;
-- * a reply claims its message's key with one conditional write
--   (`UPDATE chat_keys SET reply_id = … WHERE message_id = … AND reply_id IS NULL`),
--   and the reply row is inserted only for the claims that succeeded.
--
-- "timestamp" is the message's (the same now() of the same statement), so the purge
-- deletes the keys of purged messages by range. Deleting history rows deletes their
-- keys (the statement trigger below); deleting a user, by the foreign key.
CREATE TABLE chat_keys (
    message_id  bigint PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id   text,
    "timestamp" timestamptz NOT NULL,
    reply_id    bigint
);
CREATE UNIQUE INDEX chat_keys_client_id ON chat_keys (user_id, client_id)
    WHERE client_id IS NOT NULL;
CREATE INDEX chat_keys_timestamp ON chat_keys ("timestamp");

-- Once per DELETE statement on chat_history: the deleted messages' keys go, and a
-- deleted reply frees its message's claim (a reply deleted alone may be stored again).
CREATE FUNCTION chat_keys_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chat_keys k USING old_rows o
    WHERE o.is_user_message AND k.message_id = o.id;
    UPDATE chat_keys k SET reply_id = NULL FROM old_rows o
    WHERE NOT o.is_user_message AND k.message_id = o.reply_to AND k.reply_id = o.id;
    RETURN NULL;
END $$;
CREATE TRIGGER chat_keys_forget AFTER DELETE ON chat_history
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chat_keys_forget();

-- Once per INSERT statement on chat_history: rows written by hand (an import, an
-- instance of the previous version) get the keys the group commit writes itself, so a
-- resend of such a message is recognised and a reply to it is stored once. For the
-- group commit's own rows it finds every key there already (one index probe a row).
CREATE FUNCTION chat_keys_adopt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chat_keys (message_id, user_id, client_id, "timestamp")
    SELECT n.id, n.user_id, n.client_id, n."timestamp" FROM new_rows n
    WHERE n.is_user_message
      AND NOT EXISTS (SELECT 1 FROM chat_keys k WHERE k.message_id = n.id)
    ON CONFLICT DO NOTHING;
    UPDATE chat_keys k SET reply_id = n.id FROM new_rows n
    WHERE NOT n.is_user_message AND k.message_id = n.reply_to AND k.reply_id IS NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER chat_keys_adopt AFTER INSERT ON chat_history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chat_keys_adopt();

-- While the table is converted (partitions.convert), instances of the previous version
-- still store rows the old way; this keeps their keys, and is dropped by the switch.
CREATE FUNCTION chat_keys_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_user_message THEN
        INSERT INTO chat_keys (message_id, user_id, client_id, "timestamp")
        VALUES (NEW.id, NEW.user_id, NEW.client_id, NEW."timestamp")
        ON CONFLICT (message_id) DO UPDATE
        SET user_id = excluded.user_id, client_id = excluded.client_id;
    ELSIF NEW.reply_to IS NOT NULL THEN
        INSERT INTO chat_keys (message_id, user_id, client_id, "timestamp", reply_id)
        SELECT m.id, m.user_id, m.client_id, m."timestamp", NEW.id
        FROM chat_history m WHERE m.id = NEW.reply_to
        ON CONFLICT (message_id) DO UPDATE SET reply_id = excluded.reply_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER chat_keys_follow AFTER INSERT OR UPDATE OF user_id, client_id ON chat_history
    FOR EACH ROW EXECUTE FUNCTION chat_keys_follow();
