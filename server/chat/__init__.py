"""The chat: the WebSocket channel, replies, group-committed storage, fan-out."""
