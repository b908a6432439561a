//! ZeroMQ transport (next).
