"""The one place that speaks SQL: the storage seam (SQLite and PostgreSQL backends) and the
migrations, the routing log and its writer, settings, fitted state and the stored taxonomy."""
