"""Background jobs: the history purge (`purge`), its admin endpoints and cleanup
context (`views`), and its command line (`cli`)."""
