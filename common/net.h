// spar/common/net.h — small network helpers.
#pragma once

#include "common/status.h"

namespace spar {

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and
// released), for rendezvous addresses that must be named before anything
// listens on them (c10d TCPStore, tests). Another process may take it in
// between; callers that can bind port 0 themselves should.
Result<int> FreeLoopbackPort();

}  // namespace spar
