"""The HTTP layer: the app factory and its lifespan (state), middleware, the routes, the
OpenAPI description, the dashboard, and the one mapping of domain errors to statuses."""
