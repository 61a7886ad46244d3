"""Continual learning with task-conditioned hypernetworks (von Oswald et al., ICLR 2020).

* `regularizer`: the hypernetwork output regulariser (`output_regularizer`) and its
  one-step lookahead.
* `methods`: one `ContinualMethod` interface (init, loss of one batch of one task,
  end-of-task memory update, prediction) with `HnetMethod` (full or chunked hypernetwork
  plus learned task embeddings) and `TargetMethod` (the target trained directly:
  fine-tuning, EWC, online EWC, SI).
* `ewc`: diagonal Fisher information and the (online) EWC penalty.
* `si`: Synaptic Intelligence's path-integral importance and penalty.
* `metrics`: accuracy-matrix summaries (final average accuracy, backward transfer) and
  task inference by lowest predictive entropy.
"""

from hypernet.continual.ewc import (NotDenseError, dense_fisher_diagonal, ewc_penalty,
                                    fisher_diagonal, init_ewc_memory, update_ewc_memory)
from hypernet.continual.methods import (ContinualMethod, HnetMethod, TargetMethod,
                                        select_head)
from hypernet.continual.metrics import (average_accuracy, backward_transfer,
                                        entropy_task_inference, learning_accuracy,
                                        predictive_entropy)
from hypernet.continual.regularizer import output_regularizer, stored_mask
from hypernet.continual.si import (accumulate_path_integral, init_si_memory, si_penalty,
                                   si_penalty_grad, update_si_memory)

__all__ = [
    'NotDenseError', 'dense_fisher_diagonal', 'ewc_penalty', 'fisher_diagonal',
    'init_ewc_memory', 'update_ewc_memory', 'ContinualMethod', 'HnetMethod',
    'TargetMethod', 'select_head', 'average_accuracy', 'backward_transfer',
    'entropy_task_inference', 'learning_accuracy', 'predictive_entropy', 'output_regularizer',
    'stored_mask',
    'accumulate_path_integral', 'init_si_memory', 'si_penalty', 'si_penalty_grad',
    'update_si_memory',
]
