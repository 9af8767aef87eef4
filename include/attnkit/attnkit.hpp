// attnkit: attention and KV-cache kernels. This header includes the public surface.
#pragma once

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/softmax_state.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/core/tensor_view.hpp"

#include "attnkit/backend/tags.hpp"

#include "attnkit/attention/dense.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/variant.hpp"
