"""The one place that speaks SQL: the database and its migrations, the routing log and its
writer, settings, fitted state and the stored taxonomy."""
