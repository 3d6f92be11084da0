//! Sans-I/O protocol state machines. Nothing here sees a file descriptor, the ring or the clock:
//! they take bytes and `now`, and return bytes, a deadline and an action.

pub mod http1;
