//! Automated Device Enrollment: server tokens, enrollment profiles, the device inventory, the sync
//! worker and profile assignment.

pub mod token;
