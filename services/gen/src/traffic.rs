//! A whole generated workload (work in progress).
