-- A reply's `reply_to` is no longer a foreign key. Its check (a row lock on the
-- user message, per reply) was a fifth of PostgreSQL's work per chat message,
-- and it could fail a whole group-commit batch when a user deleted their
-- history while a reply was being stored. The batch insert joins the message
-- instead, so a reply is stored only while its message exists; the purge
-- deletes the replies of the messages it deletes, and DELETE /chat-history
-- takes all of the user's rows.
ALTER TABLE chat_history DROP CONSTRAINT chat_history_reply_to_fkey;
