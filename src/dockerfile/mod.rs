//! Dockerfile front end: parser (text → AST with byte spans), typed instructions, word expansion.
//!
//! Not yet implemented; see the Dockerfile frontend issue.
