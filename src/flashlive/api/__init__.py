"""Transport only: routes, auth check, error mapping, TLS listeners."""
