"""Everything the API and the worker share: settings, database, models and the domain modules."""
