//! `kiln elements`.

use super::*;

pub(super) fn elements(cmd: ElementsCommand) -> i32 {
    let cwd = std::env::current_dir().ok();
    let search = recipe::elements::search_path(cwd.as_deref(), &super::tunables().elements_path);
    match cmd {
        ElementsCommand::List => {
            for (name, origin) in recipe::elements::all(&search) {
                let at = origin.describe();
                match recipe::elements::load(&name, &origin) {
                    Ok(l) => outln!("{name:<18} {}  [{at}]", l.file.description),
                    Err(d) => outln!("{name:<18} (invalid: {})  [{at}]", d[0]),
                }
            }
            exit::OK
        }
        ElementsCommand::Show { name } => match recipe::elements::find(&name, &search) {
            None => {
                errln!("error: element `{name}` not found on the search path");
                exit::INVALID_INPUT
            }
            Some(origin) => match recipe::elements::read(&name, &origin) {
                Ok((file, t)) => {
                    match origin {
                        recipe::elements::Origin::BuiltIn => {
                            outln!("# {name}: built-in (compiled into kiln)")
                        }
                        recipe::elements::Origin::Dir(_) => outln!("# {}", file.display()),
                    }
                    out!("{t}");
                    exit::OK
                }
                Err(e) => {
                    errln!("error: {e}");
                    exit::INVALID_INPUT
                }
            },
        },
    }
}
