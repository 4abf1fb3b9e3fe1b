//! Dockerfile front end: text → [`Ast`] (with byte spans) → typed [`Instruction`]s, plus the
//! shell-word lexer, lints and the `.dockerignore` matcher.
//!
//! Start at [`parse`] (a faithful port of BuildKit's `frontend/dockerfile/parser`), whose
//! [`Ast::dump`] reproduces BuildKit's s-expression dumps byte for byte. [`instructions()`] then
//! validates flags and argument counts and groups instructions into stages; nothing is
//! expanded there: ARG/ENV scoping belongs to [`crate::plan`], which uses [`lex::Lexer`].
//!
//! This module does no I/O except [`ignore::read_ignore_file`], which reads the chosen
//! `.dockerignore`.
pub mod ast;
pub mod error;
pub mod ignore;
pub mod instructions;
pub mod lex;
mod line_parsers;
pub mod lint;
pub mod parser;
pub mod suggest;

pub use ast::{Ast, Directive, Heredoc, LineIndex, Node, Position, Span, Warning, Word};
pub use error::{ErrorKind, ParseError};

pub use instructions::{instructions, CommandLine, Dockerfile, Instruction};
pub use parser::{parse, parse_bytes};
