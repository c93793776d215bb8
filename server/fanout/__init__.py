"""The fan-out between server instances: events (`events`), the transport
interface (`backend`), publishing in batches (`batching`) and the two
transports, PostgreSQL LISTEN/NOTIFY (`postgres`) and a Redis Stream (`redis`).
What the chat does with the events is `server.chat.fanout`."""
