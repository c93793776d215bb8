"""Accounts: password hashing, tokens, the REST views."""
