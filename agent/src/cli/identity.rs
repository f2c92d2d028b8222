//! `identity …` admin commands: bootstrap the admin account on a fresh node (like
//! `keystone-manage bootstrap`), and the few user, project and grant operations an operator needs
//! on site before any API client can log in.

use super::{CliFailure, print};
use crate::identity::{
    Actor, BootstrapRequest, IdentityService, NewProject, NewUser, ProjectFilter, Target,
    UserFilter,
};
use clap::{Args, Subcommand};
use std::path::PathBuf;

fn bad(message: String) -> CliFailure {
    CliFailure { message, code: 3 }
}

/// `identity …`
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Create the default domain, the admin/manager/member/reader roles, the admin project and user
    /// if missing; with a password, (re)set the admin password. Safe to re-run.
    Bootstrap(Bootstrap),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage role grants.
    #[command(subcommand)]
    Role(RoleCommand),
}

/// `identity bootstrap`
#[derive(Debug, Args)]
pub struct Bootstrap {
    /// File holding the admin password (first line; trailing newline ignored).
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
    /// Admin user name.
    #[arg(long, default_value = "admin")]
    pub admin_user: String,
    /// Admin project name.
    #[arg(long, default_value = "admin")]
    pub admin_project: String,
    /// Region to record (default: `identity.region_id`).
    #[arg(long)]
    pub region_id: Option<String>,
}

/// `identity user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from a file.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Domain id.
        #[arg(long, default_value = "default")]
        domain: String,
        /// File holding the password (none: no password login).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Default project id.
        #[arg(long)]
        project: Option<String>,
    },
    /// List users.
    List {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
}

/// `identity project …`
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Domain id.
        #[arg(long, default_value = "default")]
        domain: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List projects.
    List {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
}

/// `identity role …`
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Grant a role (by name) to a user on a project, or on the system with `--system`.
    Add {
        /// Role name.
        #[arg(long)]
        role: String,
        /// User id.
        #[arg(long)]
        user: String,
        /// Project id.
        #[arg(long, conflicts_with = "system", required_unless_present = "system")]
        project: Option<String>,
        /// The system scope (`all`).
        #[arg(long)]
        system: bool,
    },
    /// List roles.
    List,
}

/// The secret in a file: its first line, without the line ending.
fn read_secret(path: &PathBuf) -> Result<String, CliFailure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let secret = text.lines().next().unwrap_or_default().to_owned();
    if secret.is_empty() {
        return Err(bad(format!("{} holds no password", path.display())));
    }
    Ok(secret)
}

/// Runs `identity …`.
pub fn run(cmd: IdentityCommand, identity: &IdentityService) -> Result<(), CliFailure> {
    match cmd {
        IdentityCommand::Bootstrap(args) => {
            let admin_password = match (
                &args.admin_password_file,
                std::env::var("SCS_EDGE_ADMIN_PASSWORD"),
            ) {
                (Some(path), _) => Some(read_secret(path)?),
                (None, Ok(password)) if !password.is_empty() => Some(password),
                (None, _) => None,
            };
            print(&identity.bootstrap(&BootstrapRequest {
                admin_password,
                admin_user: args.admin_user,
                admin_project: args.admin_project,
                region_id: args.region_id,
            })?);
        }
        IdentityCommand::User(UserCommand::Create {
            name,
            domain,
            password_file,
            project,
        }) => {
            let password = password_file.as_ref().map(read_secret).transpose()?;
            print(&identity.create_user(NewUser {
                name,
                domain_id: domain,
                password,
                enabled: true,
                default_project_id: project,
                ..NewUser::default()
            })?);
        }
        IdentityCommand::User(UserCommand::List { domain }) => {
            print(&identity.list_users(&UserFilter {
                domain_id: domain,
                name: None,
            })?);
        }
        IdentityCommand::Project(ProjectCommand::Create {
            name,
            domain,
            description,
        }) => {
            print(&identity.create_project(NewProject {
                name,
                domain_id: domain,
                description,
                enabled: true,
            })?);
        }
        IdentityCommand::Project(ProjectCommand::List { domain }) => {
            print(&identity.list_projects(&ProjectFilter {
                domain_id: domain,
                ..ProjectFilter::default()
            })?);
        }
        IdentityCommand::Role(RoleCommand::Add {
            role,
            user,
            project,
            system,
        }) => {
            let found = identity
                .list_roles(Some(&role))?
                .pop()
                .ok_or_else(|| CliFailure {
                    message: format!("Could not find role: {role}."),
                    code: 4,
                })?;
            let target = match (project, system) {
                (Some(project), false) => Target::Project(project),
                _ => Target::System,
            };
            identity.grant(&Actor::User(user.clone()), &target, &found.id)?;
            print(&serde_json::json!({ "role": found, "user": user, "target": target }));
        }
        IdentityCommand::Role(RoleCommand::List) => print(&identity.list_roles(None)?),
    }
    Ok(())
}
