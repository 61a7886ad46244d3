"""Meta-learning: one interface (`MetaLearner`), a vmapped meta-loss, a jitted meta-step."""

from hypernet.meta.base import (INIT_KEY, InnerLoop, InnerLoopLearner, MetaLearner,
                                SGDInnerLoopLearner, TrainState, evaluate, init_state,
                                make_meta_step, meta_loss, task_keys)
from hypernet.meta.inner import inner_sgd
from hypernet.meta.support_metric import ClassMetric, PrototypeAttention, SupportMetric
from hypernet.meta.head import HyperHead, class_head_target
from hypernet.meta.hyper import Amortised, HyperMAML, LatentAdaptation, LearnedUpdate
from hypernet.meta.maml import ANIL, MAML, MetaSGD, Reptile
from hypernet.meta.protonets import ProtoNet

__all__ = ['INIT_KEY', 'InnerLoop', 'InnerLoopLearner', 'SGDInnerLoopLearner', 'MetaLearner',
           'TrainState', 'evaluate', 'init_state', 'make_meta_step',
           'meta_loss', 'task_keys',
           'inner_sgd', 'ANIL', 'MAML', 'MetaSGD', 'Reptile', 'ProtoNet', 'Amortised', 'HyperMAML',
           'LatentAdaptation', 'LearnedUpdate', 'HyperHead', 'class_head_target', 'SupportMetric',
           'PrototypeAttention', 'ClassMetric']
