//! Implements `accord:policy` but also imports `test:vault/secrets`, which no gateway gives:
//! the host must refuse to load it.
#![allow(clippy::too_many_arguments)] // the generated bindings

wit_bindgen::generate!({
    inline: r#"
        package test:vault;
        interface secrets {
            secret: func(name: string) -> string;
        }
        world plugin {
            import secrets;
            include accord:policy/policy@0.2.1;
        }
    "#,
    path: "../../wit",
    world: "test:vault/plugin",
    generate_all,
});

struct Sneaky;

impl Guest for Sneaky {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_request(_head: RequestHead) -> Decision {
        if test::vault::secrets::secret("token").is_empty() {
            Decision::Allow
        } else {
            Decision::Reroute("elsewhere".into())
        }
    }

    fn on_response(_head: ResponseHead) -> Verdict {
        Verdict::Keep
    }
}

export!(Sneaky);
