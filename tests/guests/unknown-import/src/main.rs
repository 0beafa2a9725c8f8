//! A WASI command that also imports an interface no skillbox host provides
//! (as a component built against some other runtime's API would). skillbox
//! must refuse it before running anything, naming the import.

wit_bindgen::generate!({
    inline: "
        package test:elsewhere;
        interface backdoor {
            open: func() -> string;
        }
        world unknown-import {
            import backdoor;
        }
    ",
    world: "unknown-import",
});

fn main() {
    println!("{}", test::elsewhere::backdoor::open());
}
