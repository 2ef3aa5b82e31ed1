//! Store backends: Redis (fleets) and SQLite (embedded default, one file).
