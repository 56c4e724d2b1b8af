"""AI chat: providers with fallback and circuit breakers, server-side tools, safety filters,
and the service that ties them to stored conversations."""
