"""Infrastructure below every app: database helpers, bounded caches, keyset pages, logging,
request middleware and notification transports. Imports no app of ours."""
