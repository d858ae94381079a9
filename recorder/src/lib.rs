//! Recording a sketch of a program's run.
