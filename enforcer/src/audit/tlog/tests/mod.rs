//! Known-answer tests against published vectors, and exhaustive checks on small trees.

mod merkle;
mod note;
