//! The registries of `node.toml` sections: the [`sections!`] macro that the backends
//! ([`crate::backends::Sections`]) and the event sources ([`crate::sources::Sections`]) use
//! to declare one entry per line.

/// Declares a registry of configuration sections: one line per entry, `name: Config =>
/// build`, gives the `[name]` section of `node.toml` (parsed into `Config`, optional) and
/// the function that builds the entry from it (`build(&Config, &mut Context)`), called in
/// the order of the lines for every section present. The backends
/// ([`crate::backends::Sections`]) and the event sources ([`crate::sources::Sections`]) are
/// such registries; the configuration file ([`crate::config`]) parses them.
macro_rules! sections {
    (
        $(#[$doc:meta])*
        pub struct $name:ident for $cx:ty {
            $( $(#[$fdoc:meta])* $field:ident: $ty:ty => $build:path, )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: Option<$ty>, )*
        }

        impl $name {
            /// The sections' names, as written in `node.toml`.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Builds the entry of every section present, in the registry's order.
            pub fn build(&self, cx: &mut $cx) -> crate::Result<()> {
                $( if let Some(section) = &self.$field { $build(section, cx)?; } )*
                Ok(())
            }
        }
    };
}
pub(crate) use sections;
