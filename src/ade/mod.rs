//! Automated Device Enrollment: server tokens, the device inventory, the sync worker (and, later,
//! enrollment profiles and their assignment).

pub mod inventory;
pub mod sync;
pub mod token;
