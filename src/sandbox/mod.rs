//! Rootless execution of RUN steps in Linux user namespaces.
//!
//! Not yet implemented; see the rootless RUN issue.
