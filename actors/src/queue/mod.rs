//! The step queue on apalis: an embedded SQLite backend (default) and Redis (fleets).
