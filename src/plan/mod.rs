//! The build planner: Dockerfile + build args + target → `BuildPlan`. No I/O.
//!
//! Not yet implemented; see the Dockerfile frontend issue.
