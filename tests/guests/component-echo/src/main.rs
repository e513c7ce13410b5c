//! Echoes stdin to stdout and logs one line to stderr.

use std::io::{Read, Write};

fn main() {
    let mut event = Vec::new();
    std::io::stdin()
        .read_to_end(&mut event)
        .expect("the event is readable on stdin");
    let greeting = std::env::var("GREETING").unwrap_or_default();
    eprintln!("component-echo: {} bytes, GREETING={greeting}", event.len());
    std::io::stdout()
        .write_all(&event)
        .expect("the result is writable on stdout");
}
