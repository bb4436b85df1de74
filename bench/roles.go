package bench

// The roles of this binary's children: the servers of its peers and torture
// scenarios, torture's attacker and the shmipc peer's client, and the types
// of their settings.
const (
	unixRole         role[noSettings]           = "unix"
	fdpassRole       role[noSettings]           = "fdpass"
	engineRole       role[engineSettings]       = "pktipc"
	eventsRole       role[noSettings]           = "pktipc-events"
	gitDaemonRole    role[gitDaemonSettings]    = "pktipc-gitd"
	grpcRole         role[noSettings]           = "grpc"
	ttrpcRole        role[noSettings]           = "ttrpc"
	mangosRole       role[noSettings]           = "mangos"
	shmipcRole       role[shmipcServerSettings] = "shmipc"
	shmipcClientRole role[clientChildSettings]  = "shmipc-client"
	tortureRole      role[tortureSettings]      = "torture"
	attackRole       role[attackSettings]       = "torture-attack"
)

// serverRoles are the roles a re-executed child of this binary can take. A
// child gets only a name from its parent, across exec, so the table maps
// names to functions; the test binary adds roles of its own to it from an
// init function.
var serverRoles = roleTable(
	unixRole.with(serveUnix),
	fdpassRole.with(serveFDPass),
	engineRole.with(serveEngine),
	eventsRole.with(serveEvents),
	gitDaemonRole.with(serveGitDaemon),
	grpcRole.with(serveGRPC),
	ttrpcRole.with(serveTTRPC),
	mangosRole.with(serveMangos),
	shmipcRole.with(serveShmipc),
	shmipcClientRole.with(runShmipcClient),
	tortureRole.with(serveTorture),
	attackRole.with(serveAttack),
)
