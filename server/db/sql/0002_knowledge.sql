-- The knowledge base, editable at run time through the admin API.
--
-- Documents live in named collections. A server serves the collection named
-- after its KNOWLEDGE_PATH file (its file name, e.g. "knowledge.json"); the
-- file seeds the collection the first time a server uses it, and the row in
-- knowledge_collections records that, so a collection emptied through the API
-- is not seeded again. `version` goes up with every change (in the change's
-- transaction), so an instance knows whether its index is current.
CREATE TABLE knowledge_collections (
    name        text PRIMARY KEY,
    version     bigint NOT NULL DEFAULT 1,
    seeded_from text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE knowledge_documents (
    collection  text NOT NULL REFERENCES knowledge_collections (name) ON DELETE CASCADE,
    id          text NOT NULL,
    topic       text NOT NULL,
    content     text NOT NULL,
    -- Documents keep the order they were added in (the file's order first);
    -- replacing one keeps its place.
    position    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, id)
);
CREATE INDEX knowledge_documents_order ON knowledge_documents (collection, position);
