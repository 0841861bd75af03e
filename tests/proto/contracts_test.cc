// The spar.v1 contracts: the services, their streaming shape, and the
// messages round-tripping through the wire format.
#include <gtest/gtest.h>

#include "spar/v1/generator.grpc.pb.h"
#include "spar/v1/learner.grpc.pb.h"
#include "spar/v1/scorer.grpc.pb.h"
#include "spar/v1/bus.pb.h"

namespace spar {
namespace {

const google::protobuf::ServiceDescriptor* Service(const std::string& name) {
  // Touch one message of each file so its object (and descriptors) is linked.
  v1::GeneratorInfo::descriptor();
  v1::ScorerInfo::descriptor();
  v1::LearnerInfo::descriptor();
  const auto* s = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
  if (s == nullptr) throw std::runtime_error("service " + name + " is not in the generated pool");
  return s;
}

const google::protobuf::MethodDescriptor* Method(const google::protobuf::ServiceDescriptor* s,
                                                 const std::string& name) {
  const auto* m = s->FindMethodByName(name);
  EXPECT_NE(m, nullptr) << s->full_name() << "." << name;
  return m;
}

TEST(ContractsTest, ServicesHaveTheAgreedShape) {
  const auto* gen = Service("spar.v1.Generator");
  EXPECT_EQ(gen->full_name(), "spar.v1.Generator");
  EXPECT_TRUE(Method(gen, "Generate")->server_streaming());
  EXPECT_FALSE(Method(gen, "Generate")->client_streaming());
  EXPECT_TRUE(Method(gen, "UpdateWeights")->client_streaming());
  Method(gen, "Info");
  Method(gen, "Health");

  const auto* scorer = Service("spar.v1.PreferenceScorer");
  EXPECT_EQ(scorer->full_name(), "spar.v1.PreferenceScorer");
  Method(scorer, "Score");
  Method(scorer, "Info");
  // The scorer takes text, never token ids.
  const auto* group = v1::ScoreGroup::descriptor();
  EXPECT_EQ(group->FindFieldByName("responses")->type(),
            google::protobuf::FieldDescriptor::TYPE_STRING);

  const auto* learner = Service("spar.v1.Learner");
  EXPECT_TRUE(Method(learner, "SubmitExamples")->client_streaming());
  Method(learner, "StartIteration");
  Method(learner, "FinishIteration");
}

TEST(ContractsTest, RolloutAndWeightBucketRoundTrip) {
  v1::Rollout r;
  r.set_prompt_id("p1");
  r.set_sample_index(4);
  r.set_text("hello");
  r.add_token_ids(128000);
  r.add_logprobs(-0.25f);
  r.set_finish_reason(v1::FINISH_REASON_LENGTH);
  r.set_policy_version(3);
  std::string wire;
  ASSERT_TRUE(r.SerializeToString(&wire));
  v1::Rollout back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.policy_version(), 3u);
  EXPECT_EQ(back.token_ids(0), 128000);
  EXPECT_FLOAT_EQ(back.logprobs(0), -0.25f);

  v1::WeightStreamMessage m;
  auto* bucket = m.mutable_bucket();
  bucket->set_version(2);
  bucket->set_data(std::string(1 << 20, '\x01'));
  auto* t = bucket->add_tensors();
  t->set_name("model.embed_tokens.weight");
  t->set_dtype("BF16");
  t->add_shape(512);
  t->add_shape(1024);
  t->set_nbytes(1 << 20);
  ASSERT_TRUE(m.SerializeToString(&wire));
  v1::WeightStreamMessage mb;
  ASSERT_TRUE(mb.ParseFromString(wire));
  ASSERT_EQ(mb.kind_case(), v1::WeightStreamMessage::kBucket);
  EXPECT_EQ(mb.bucket().data().size(), 1u << 20);
  EXPECT_EQ(mb.bucket().tensors(0).shape(1), 1024);
}

TEST(ContractsTest, GarbageIsRejectedByTheParser) {
  v1::GenerateRequest req;
  std::string junk = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01";
  EXPECT_FALSE(req.ParseFromString(junk));
}

}  // namespace
}  // namespace spar
