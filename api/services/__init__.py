"""Services: the business logic routes call; they own transactions and call repositories."""
