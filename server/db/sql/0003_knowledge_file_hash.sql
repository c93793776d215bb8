-- The fingerprint (SHA-256) of the knowledge file a collection was last seeded
-- from: a server started with a changed file re-seeds the collection from it.
ALTER TABLE knowledge_collections ADD COLUMN seeded_hash text;
