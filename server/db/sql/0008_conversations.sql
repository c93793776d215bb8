-- Conversations: a user's messages belong to conversations.
--
-- `updated_at` is the conversation's activity: the time of its last message (or
-- reply), else its creation; a rename does not move it. Lists are ordered by it.
--
-- Without downtime for chat: everything here is quick (the new column has no
-- default, so adding it rewrites nothing; one conversation per user who has
-- history is found through the (user_id, id) index). The existing rows get their
-- conversation_id afterwards, in batches (server/db/conversations.py,
-- `backfill`), and the (conversation_id, id) index is built CONCURRENTLY there.
-- Instances of the previous version, still running during a rolling update,
-- insert rows without a conversation: the trigger below puts them in the user's
-- most recently active one, as the new code does for clients that send none.
CREATE TABLE conversations (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- A user's conversations by activity (the list, and the default conversation).
CREATE INDEX conversations_user_active ON conversations (user_id, updated_at DESC, id DESC);

-- No foreign key, as with reply_to (0004): a failed check would fail a whole
-- group-commit batch. The batch inserts only into the sender's own
-- conversations; deleting a conversation deletes its rows.
ALTER TABLE chat_history ADD COLUMN conversation_id bigint;

-- One conversation per user with history: its first message's time and text
-- (60 characters, when the first row is a question), active as of its last.
INSERT INTO conversations (user_id, title, created_at, updated_at)
SELECT u.id,
       CASE WHEN f.is_user_message THEN left(f.message, 60) END,
       f."timestamp",
       greatest(f."timestamp", l."timestamp")
FROM users u
CROSS JOIN LATERAL (
    SELECT message, is_user_message, "timestamp" FROM chat_history
    WHERE user_id = u.id ORDER BY id LIMIT 1
) f
CROSS JOIN LATERAL (
    SELECT "timestamp" FROM chat_history WHERE user_id = u.id ORDER BY id DESC LIMIT 1
) l;

-- A row stored without a conversation: a reply goes with its question; a question
-- to the user's most recently active conversation, made (titled by it) when the
-- user has none. The advisory lock keeps two instances from making two at once.
CREATE FUNCTION chat_history_default_conversation() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NEW.reply_to IS NOT NULL THEN
        SELECT conversation_id INTO NEW.conversation_id FROM chat_history WHERE id = NEW.reply_to;
        IF NEW.conversation_id IS NOT NULL THEN
            RETURN NEW;
        END IF;
    END IF;
    SELECT id INTO NEW.conversation_id FROM conversations
    WHERE user_id = NEW.user_id ORDER BY updated_at DESC, id DESC LIMIT 1;
    IF NEW.conversation_id IS NULL THEN
        PERFORM pg_advisory_xact_lock(1668247158, hashtext(NEW.user_id::text));
        SELECT id INTO NEW.conversation_id FROM conversations
        WHERE user_id = NEW.user_id ORDER BY updated_at DESC, id DESC LIMIT 1;
        IF NEW.conversation_id IS NULL THEN
            INSERT INTO conversations (user_id, title)
            VALUES (NEW.user_id, CASE WHEN NEW.is_user_message THEN left(NEW.message, 60) END)
            RETURNING id INTO NEW.conversation_id;
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER chat_history_default_conversation BEFORE INSERT ON chat_history
    FOR EACH ROW WHEN (NEW.conversation_id IS NULL)
    EXECUTE FUNCTION chat_history_default_conversation();

-- Once per statement (one per group-commit batch): the conversations that got rows
-- become active now, and one still without a title takes its first question's
-- first 60 characters.
CREATE FUNCTION chat_history_touch_conversations() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversations c
    SET updated_at = greatest(c.updated_at, n.at),
        title = coalesce(c.title, n.first_question)
    FROM (
        SELECT conversation_id,
               max("timestamp") AS at,
               left((array_agg(message ORDER BY id) FILTER (WHERE is_user_message))[1], 60)
                   AS first_question
        FROM new_rows WHERE conversation_id IS NOT NULL
        GROUP BY conversation_id
    ) n
    WHERE c.id = n.conversation_id;
    RETURN NULL;
END $$;
CREATE TRIGGER chat_history_touch_conversations AFTER INSERT ON chat_history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chat_history_touch_conversations();
