//! A kernel's interface, declared once in Rust: the uniform structs it reads and the buffers it
//! binds. The WGSL declarations (`struct`s and `@group(0) @binding(i) var …` lines) are generated
//! from the same description that orders the bind group, so a shader file holds only code, and a
//! field or binding cannot drift between the host and the shader.
//!
//! - [`uniform!`](crate::uniform) defines a `#[repr(C)]` struct of 32-bit scalars (`u32`, `i32`,
//!   `f32`) and its WGSL `struct` text from one definition ([`Uniform`]).
//! - A [`Slot`] is one binding: a uniform of such a struct, or a storage array (`read` or
//!   `read_write`) of an element type.
//! - An [`Interface`] is a kernel's parameters (binding 0, named `p`) and its slots (bindings
//!   1.. in order). Every slot is declared in the module; each entry point's layout holds those it
//!   uses, and the host binds buffers to slots by the slot itself, never by position.

use std::fmt::Write as _;

/// A field type a [`Uniform`] may hold: a 32-bit scalar with the same name in Rust and WGSL.
pub trait WgslScalar: bytemuck::Pod {}
impl WgslScalar for u32 {}
impl WgslScalar for i32 {}
impl WgslScalar for f32 {}

/// A `#[repr(C)]` struct of [`WgslScalar`] fields with its WGSL declaration. Define with
/// [`uniform!`](crate::uniform), which derives both from one field list.
pub trait Uniform: bytemuck::Pod {
    /// The struct's name, the same in Rust and WGSL.
    const NAME: &'static str;
    /// `struct NAME { field: type, … }`.
    const WGSL: &'static str;
}

/// Defines a uniform struct: the `#[repr(C)]` Pod struct and its WGSL declaration
/// ([`Uniform`](crate::gpu::Uniform)). Fields are 32-bit scalars (`u32`, `i32`, `f32`), so the
/// struct has no padding and the two layouts agree field for field; the uniform buffer is padded
/// to 16 bytes when it is created.
#[macro_export]
macro_rules! uniform {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ident),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }

        impl $crate::gpu::Uniform for $name {
            const NAME: &'static str = stringify!($name);
            const WGSL: &'static str = concat!(
                "struct ", stringify!($name), " {\n",
                $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)*
                "}\n"
            );
        }

        const _: () = {
            const fn scalar<T: $crate::gpu::WgslScalar>() {}
            $(scalar::<$ty>();)*
        };
    };
}

/// How a kernel sees a storage buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// `var<storage, …> name: array<elem>`.
    Storage { elem: &'static str, access: Access },
    /// `var<uniform> name: ty`, with the struct's declaration.
    Uniform {
        ty: &'static str,
        decl: &'static str,
    },
}

/// One binding of a kernel: its WGSL variable name and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub name: &'static str,
    pub kind: SlotKind,
}

impl Slot {
    /// A read-only storage array of `elem` (`"f32"`, `"u32"`, `"vec4<f32>"`, …).
    pub const fn read(name: &'static str, elem: &'static str) -> Slot {
        Slot {
            name,
            kind: SlotKind::Storage {
                elem,
                access: Access::Read,
            },
        }
    }

    /// A read-write storage array of `elem`.
    pub const fn read_write(name: &'static str, elem: &'static str) -> Slot {
        Slot {
            name,
            kind: SlotKind::Storage {
                elem,
                access: Access::ReadWrite,
            },
        }
    }

    /// A uniform holding a `U`.
    pub const fn uniform<U: Uniform>(name: &'static str) -> Slot {
        Slot {
            name,
            kind: SlotKind::Uniform {
                ty: U::NAME,
                decl: U::WGSL,
            },
        }
    }
}

/// A kernel's bindings: `p` (its parameters) at binding 0 when it has any, then `slots` in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interface {
    pub params: Option<Slot>,
    pub slots: &'static [Slot],
}

impl Interface {
    /// No bindings (a kernel that declares its own, or none).
    pub const NONE: Interface = Interface {
        params: None,
        slots: &[],
    };

    /// Parameters of type `P` at binding 0, then `slots`.
    pub const fn new<P: Uniform>(slots: &'static [Slot]) -> Interface {
        Interface {
            params: Some(Slot::uniform::<P>("p")),
            slots,
        }
    }

    /// The slots with their binding numbers.
    pub fn bindings(&self) -> impl Iterator<Item = (u32, &Slot)> + '_ {
        self.params
            .iter()
            .chain(self.slots.iter())
            .enumerate()
            .map(|(i, s)| (i as u32, s))
    }

    /// The binding number of `slot`, if the kernel has it.
    pub fn binding_of(&self, slot: &Slot) -> Option<u32> {
        self.bindings().find(|(_, s)| *s == slot).map(|(i, _)| i)
    }

    /// The WGSL declarations: each uniform struct once, then one line per binding.
    pub fn wgsl(&self) -> String {
        let mut s = String::new();
        let mut structs: Vec<&str> = Vec::new();
        for (_, slot) in self.bindings() {
            if let SlotKind::Uniform { decl, .. } = slot.kind {
                if !structs.contains(&decl) {
                    structs.push(decl);
                    s.push_str(decl);
                }
            }
        }
        for (i, slot) in self.bindings() {
            let _ = match slot.kind {
                SlotKind::Uniform { ty, .. } => writeln!(
                    s,
                    "@group(0) @binding({i}) var<uniform> {}: {ty};",
                    slot.name
                ),
                SlotKind::Storage { elem, access } => writeln!(
                    s,
                    "@group(0) @binding({i}) var<storage, {}> {}: array<{elem}>;",
                    match access {
                        Access::Read => "read",
                        Access::ReadWrite => "read_write",
                    },
                    slot.name
                ),
            };
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::uniform! {
        struct TestParams {
            n: u32,
            /// A documented field.
            eps: f32,
            shift: i32,
        }
    }

    crate::uniform! {
        struct TestStep {
            offset: u32,
        }
    }

    const X: Slot = Slot::read("x", "vec4<f32>");
    const Y: Slot = Slot::read_write("y", "f32");
    const STEP: Slot = Slot::uniform::<TestStep>("step");

    #[test]
    fn uniform_struct_text_matches_the_rust_fields() {
        assert_eq!(TestParams::NAME, "TestParams");
        assert_eq!(
            TestParams::WGSL,
            "struct TestParams {\n    n: u32,\n    eps: f32,\n    shift: i32,\n}\n"
        );
        assert_eq!(std::mem::size_of::<TestParams>(), 12);
        let p = TestParams {
            n: 7,
            eps: 0.5,
            shift: -1,
        };
        let words: &[u32] = bytemuck::cast_slice(bytemuck::bytes_of(&p));
        assert_eq!(words, [7, 0.5f32.to_bits(), u32::MAX]);
    }

    #[test]
    fn bindings_follow_the_slots() {
        let iface = Interface::new::<TestParams>(&[STEP, X, Y]);
        let src = iface.wgsl();
        assert_eq!(
            src,
            "struct TestParams {\n    n: u32,\n    eps: f32,\n    shift: i32,\n}\n\
             struct TestStep {\n    offset: u32,\n}\n\
             @group(0) @binding(0) var<uniform> p: TestParams;\n\
             @group(0) @binding(1) var<uniform> step: TestStep;\n\
             @group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;\n\
             @group(0) @binding(3) var<storage, read_write> y: array<f32>;\n"
        );
        assert_eq!(iface.binding_of(&Y), Some(3));
        assert_eq!(iface.binding_of(&Slot::read("z", "f32")), None);
        let bare = Interface {
            params: None,
            slots: &[X, Y],
        };
        assert_eq!(bare.binding_of(&X), Some(0));
        assert_eq!(bare.binding_of(&Y), Some(1));
    }
}
