"""The fan-out between server instances: events (`events`), the transport
interface (`backend`) and its PostgreSQL LISTEN/NOTIFY implementation
(`postgres`). What the chat does with the events is `server.chat.fanout`."""
