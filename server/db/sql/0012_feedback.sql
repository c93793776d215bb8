-- A visitor's thumbs up or down on one of their replies, with an optional comment.
-- reply_id is the reply's chat_history id, with no foreign key (as reply_to since 0004):
-- chat_history may be partitioned, and the purge and the history deletes remove a
-- reply's feedback themselves.
CREATE TABLE feedback (
    reply_id   bigint PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    rating     text NOT NULL CHECK (rating IN ('up', 'down')),
    comment    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_user ON feedback (user_id);
CREATE INDEX feedback_newest ON feedback (updated_at DESC);
