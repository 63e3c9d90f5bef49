//! The ormsync tables as a sea-orm-migration migration.

use sea_orm_migration::prelude::*;

/// Creates (and on `down`, drops) the `ormsync_*` tables; add it to the application's
/// own `Migrator` so they are managed like every other table.
///
/// `up` is idempotent, so adding it to a database where [`install`](crate::install) or the
/// replicator already created the tables is harmless.
///
/// # Examples
///
/// ```
/// use sea_orm_migration::prelude::*;
///
/// pub struct Migrator;
///
/// #[async_trait::async_trait]
/// impl MigratorTrait for Migrator {
///     fn migrations() -> Vec<Box<dyn MigrationTrait>> {
///         vec![Box::new(ormsync::migration::Migration)]
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), DbErr> {
/// let db = sea_orm::Database::connect("sqlite::memory:").await?;
/// Migrator::up(&db, None).await?;
/// # Ok(()) }
/// ```
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20260101_000001_ormsync_install"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::schema::install(manager.get_connection()).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::schema::uninstall(manager.get_connection()).await?;
        Ok(())
    }
}
