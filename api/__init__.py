"""The HTTP edge: routes, auth, and the one map from domain errors to responses."""
