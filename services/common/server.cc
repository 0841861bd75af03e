#include "services/common/server.h"

namespace spar {

Result<RunningServer> StartGrpcServer(const GrpcServerOptions& options,
                                      const std::vector<grpc::Service*>& services) {
  auto colon = options.address.rfind(':');
  if (colon == std::string::npos || colon + 1 >= options.address.size())
    return InvalidArgument("listen address '" + options.address + "' must be host:port");
  const std::string port_text = options.address.substr(colon + 1);
  if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5 ||
      std::stoi(port_text) > 65535)
    return InvalidArgument("listen address '" + options.address + "' has a bad port");
  grpc::ServerBuilder builder;
  RunningServer running;
  builder.AddListeningPort(options.address, grpc::InsecureServerCredentials(), &running.port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  for (auto* s : services) builder.RegisterService(s);
  running.server = builder.BuildAndStart();
  if (!running.server || running.port == 0)
    return Unavailable("cannot listen on '" + options.address + "' (port in use or not permitted?)");
  running.address = options.address.substr(0, colon) + ":" + std::to_string(running.port);
  return running;
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, int64_t max_message_bytes) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

}  // namespace spar
